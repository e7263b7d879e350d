output "endpoint" {
  description = "The database host name."
  value       = aws_db_instance.this.address
}

output "master_secret_arn" {
  description = "Secrets Manager secret holding the master user's password (rotated by RDS)."
  value       = aws_db_instance.this.master_user_secret[0].secret_arn
}
