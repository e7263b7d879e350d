variable "name" {
  description = "Name prefix of every resource."
  type        = string
}

variable "cidr" {
  description = "The VPC's IPv4 range."
  type        = string

  validation {
    condition     = can(cidrnetmask(var.cidr))
    error_message = "cidr must be an IPv4 CIDR."
  }
}

variable "availability_zones" {
  description = "Zones to make one public and one private subnet in."
  type        = list(string)
}
