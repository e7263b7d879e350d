variable "name" {
  description = "Name prefix of the roles."
  type        = string
}

variable "oidc_provider_arn" {
  description = "The cluster's IAM OIDC provider."
  type        = string
}

variable "oidc_issuer" {
  description = "The cluster's OIDC issuer without https://."
  type        = string
}

variable "namespace" {
  description = "Namespace of Gatherly's service accounts."
  type        = string
}

variable "images_bucket_arn" {
  description = "The images bucket."
  type        = string
}

variable "images_kms_key_arn" {
  description = "The images bucket's KMS key."
  type        = string
}

variable "secret_arns" {
  description = "Secrets the External Secrets operator may read."
  type        = list(string)
}
