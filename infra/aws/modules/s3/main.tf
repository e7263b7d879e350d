# The images bucket: private (public access blocked; browsers upload and read through presigned URLs the images
# service signs), encrypted, versioned with old versions expired, TLS only, CORS for the web app's direct
# uploads, and lifecycle rules: uploads never completed (uploads/) are deleted after upload_expiry_days,
# incomplete multipart uploads after a day.
resource "aws_s3_bucket" "images" {
  #checkov:skip=CKV_AWS_18:Server access logs would record every presigned variant GET; the images service logs uploads, processing and deletions itself.
  #checkov:skip=CKV2_AWS_62:Nothing reacts to bucket events: the images service learns of an upload from the client's complete call.
  #checkov:skip=CKV_AWS_144:Versioning keeps deleted variants 7 days; a cross-region copy of people's photos is a per-deployment privacy and cost decision.
  bucket = "${var.name}-images"
}

resource "aws_s3_bucket_public_access_block" "images" {
  bucket                  = aws_s3_bucket.images.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "images" {
  bucket = aws_s3_bucket.images.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_kms_key" "images" {
  #checkov:skip=CKV2_AWS_64:The default key policy (the account's IAM decides who uses the key) is intended; IAM policies grant its use.
  description         = "${var.name} images bucket"
  enable_key_rotation = true
}

resource "aws_s3_bucket_server_side_encryption_configuration" "images" {
  bucket = aws_s3_bucket.images.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.images.arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_versioning" "images" {
  bucket = aws_s3_bucket.images.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "images" {
  bucket = aws_s3_bucket.images.id

  rule {
    id     = "abandoned-uploads"
    status = "Enabled"
    filter {
      prefix = "uploads/"
    }
    expiration {
      days = var.upload_expiry_days
    }
    noncurrent_version_expiration {
      noncurrent_days = 1
    }
  }

  rule {
    id     = "incomplete-multipart"
    status = "Enabled"
    filter {}
    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }

  # Deleted images' variants stay recoverable for a week (versioning), then go.
  rule {
    id     = "deleted-variants"
    status = "Enabled"
    filter {
      prefix = "images/"
    }
    noncurrent_version_expiration {
      noncurrent_days = 7
    }
  }
}

resource "aws_s3_bucket_cors_configuration" "images" {
  bucket = aws_s3_bucket.images.id
  cors_rule {
    allowed_methods = ["PUT", "GET"]
    allowed_origins = var.cors_origins
    allowed_headers = ["content-type", "content-length"]
    max_age_seconds = 3600
  }
}

data "aws_iam_policy_document" "tls_only" {
  statement {
    sid       = "DenyPlainHttp"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.images.arn, "${aws_s3_bucket.images.arn}/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "images" {
  bucket = aws_s3_bucket.images.id
  policy = data.aws_iam_policy_document.tls_only.json
}
