output "bucket_name" {
  description = "The images bucket."
  value       = aws_s3_bucket.images.id
}

output "bucket_arn" {
  description = "The images bucket's ARN."
  value       = aws_s3_bucket.images.arn
}

output "kms_key_arn" {
  description = "The key the bucket's objects are encrypted with."
  value       = aws_kms_key.images.arn
}
