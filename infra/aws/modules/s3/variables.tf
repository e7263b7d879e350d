variable "name" {
  description = "Name prefix; the bucket is <name>-images."
  type        = string
}

variable "upload_expiry_days" {
  description = "Days after which objects under uploads/ are deleted."
  type        = number
}

variable "cors_origins" {
  description = "Origins allowed to PUT uploads and GET variants from browsers."
  type        = list(string)
}
