# IAM roles for service accounts: a Kubernetes service account takes an AWS role through the cluster's OIDC
# provider, with no key in the cluster. The images service reads and writes its bucket; the External Secrets
# operator reads the gatherly/* secrets. Each trust names one service account in one namespace.
locals {
  roles = {
    images = {
      service_account = "system:serviceaccount:${var.namespace}:gatherly-images"
      policy          = data.aws_iam_policy_document.images.json
    }
    external-secrets = {
      service_account = "system:serviceaccount:external-secrets:external-secrets"
      policy          = data.aws_iam_policy_document.secrets.json
    }
  }
}

data "aws_iam_policy_document" "assume" {
  for_each = local.roles
  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]
    principals {
      type        = "Federated"
      identifiers = [var.oidc_provider_arn]
    }
    condition {
      test     = "StringEquals"
      variable = "${var.oidc_issuer}:sub"
      values   = [each.value.service_account]
    }
    condition {
      test     = "StringEquals"
      variable = "${var.oidc_issuer}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "this" {
  for_each           = local.roles
  name               = "${var.name}-${each.key}"
  assume_role_policy = data.aws_iam_policy_document.assume[each.key].json
}

resource "aws_iam_role_policy" "this" {
  for_each = local.roles
  role     = aws_iam_role.this[each.key].id
  policy   = each.value.policy
}

data "aws_iam_policy_document" "images" {
  statement {
    sid       = "Objects"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:HeadObject"]
    resources = ["${var.images_bucket_arn}/*"]
  }
  statement {
    sid       = "Bucket"
    actions   = ["s3:ListBucket", "s3:GetBucketLocation"]
    resources = [var.images_bucket_arn]
  }
  statement {
    sid       = "BucketKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [var.images_kms_key_arn]
  }
}

data "aws_iam_policy_document" "secrets" {
  statement {
    actions   = ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"]
    resources = var.secret_arns
  }
}
