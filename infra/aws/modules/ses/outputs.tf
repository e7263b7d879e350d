output "dkim_tokens" {
  description = "DKIM tokens: publish <token>._domainkey.<domain> CNAME <token>.dkim.amazonses.com."
  value       = aws_sesv2_email_identity.domain.dkim_signing_attributes[0].tokens
}

output "smtp_user" {
  description = "IAM user whose access key becomes the SMTP credentials."
  value       = aws_iam_user.smtp.name
}
