output "bootstrap_brokers_sasl_scram" {
  description = "Bootstrap brokers for SASL/SCRAM over TLS (port 9096)."
  value       = aws_msk_cluster.this.bootstrap_brokers_sasl_scram
}

output "kms_key_arn" {
  description = "Key the SCRAM secrets (AmazonMSK_*) must be encrypted with."
  value       = aws_kms_key.this.arn
}
