output "cluster_name" {
  description = "EKS cluster name (aws eks update-kubeconfig --name ...)."
  value       = module.eks.cluster_name
}

output "database_endpoint" {
  description = "RDS PostgreSQL endpoint (host) the service databases live on."
  value       = one(module.rds[*].endpoint)
}

output "kafka_bootstrap_brokers" {
  description = "MSK bootstrap brokers for SASL/SCRAM over TLS."
  value       = one(module.msk[*].bootstrap_brokers_sasl_scram)
}

output "images_bucket" {
  description = "S3 bucket of the images service."
  value       = module.s3.bucket_name
}

output "images_role_arn" {
  description = "IAM role of the images service account (IRSA)."
  value       = module.irsa.images_role_arn
}

output "external_secrets_role_arn" {
  description = "IAM role of the External Secrets operator's service account (IRSA), reading gatherly/* secrets."
  value       = module.irsa.external_secrets_role_arn
}

# What the Kubernetes overlay needs, in the format of deploy/k8s/overlays/prod/infra.env:
#   terraform output -raw k8s_infra_env > deploy/k8s/overlays/prod/infra.env
# (no secret in it: passwords stay in Secrets Manager and reach the pods through ExternalSecrets).
output "k8s_infra_env" {
  description = "deploy/k8s/overlays/<env>/infra.env: the values the overlay's replacements apply."
  value = join("\n", [
    "AWS_REGION=${var.region}",
    "VPC_CIDR=${var.vpc_cidr}",
    "DATABASE_HOST=${coalesce(one(module.rds[*].endpoint), "gatherly-db-rw")}",
    "KAFKA_BOOTSTRAP_SERVERS=${coalesce(one(module.msk[*].bootstrap_brokers_sasl_scram), "gatherly-kafka-bootstrap:9092")}",
    "IMAGES_BUCKET=${module.s3.bucket_name}",
    "IMAGES_ROLE_ARN=${module.irsa.images_role_arn}",
    "SES_SMTP_HOST=email-smtp.${var.region}.amazonaws.com",
    "",
  ])
}
