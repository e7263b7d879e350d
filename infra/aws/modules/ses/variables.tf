variable "name" {
  description = "Name prefix."
  type        = string
}

variable "domain" {
  description = "The sending domain."
  type        = string
}
