output "images_role_arn" {
  description = "Role of the gatherly-images service account."
  value       = aws_iam_role.this["images"].arn
}

output "external_secrets_role_arn" {
  description = "Role of the External Secrets operator's service account."
  value       = aws_iam_role.this["external-secrets"].arn
}
