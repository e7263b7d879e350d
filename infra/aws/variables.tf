variable "environment" {
  description = "Environment name (dev or prod): prefixes every resource name and the Kubernetes namespace."
  type        = string

  validation {
    condition     = contains(["dev", "prod"], var.environment)
    error_message = "environment must be dev or prod."
  }
}

variable "region" {
  description = "AWS region everything runs in."
  type        = string
  default     = "eu-west-1"

  validation {
    condition     = can(regex("^[a-z]{2}-[a-z]+-[0-9]$", var.region))
    error_message = "region must look like eu-west-1."
  }
}

variable "vpc_cidr" {
  description = "The VPC's IPv4 range; split into public and private subnets across availability_zones."
  type        = string
  default     = "10.40.0.0/16"

  validation {
    condition     = can(cidrnetmask(var.vpc_cidr)) && tonumber(split("/", var.vpc_cidr)[1]) <= 20
    error_message = "vpc_cidr must be an IPv4 CIDR of /20 or larger."
  }
}

variable "availability_zones" {
  description = "Availability zones to spread subnets, nodes, the database and brokers over (2 or 3)."
  type        = list(string)
  default     = ["eu-west-1a", "eu-west-1b", "eu-west-1c"]

  validation {
    condition     = length(var.availability_zones) >= 2 && length(var.availability_zones) <= 3
    error_message = "Give 2 or 3 availability zones."
  }
}

variable "kubernetes_version" {
  description = "EKS Kubernetes version (the manifests are validated against 1.37 schemas)."
  type        = string
  default     = "1.37"

  validation {
    condition     = can(regex("^1\\.[0-9]+$", var.kubernetes_version))
    error_message = "kubernetes_version must look like 1.37."
  }
}

variable "node_instance_types" {
  description = "EC2 instance types of the EKS managed node group."
  type        = list(string)
  default     = ["m7i.large"]

  validation {
    condition     = length(var.node_instance_types) > 0
    error_message = "Give at least one instance type."
  }
}

variable "node_count" {
  description = "Nodes: desired, min and max of the managed node group."
  type        = object({ desired = number, min = number, max = number })
  default     = { desired = 3, min = 3, max = 9 }

  validation {
    condition     = var.node_count.min >= 2 && var.node_count.min <= var.node_count.desired && var.node_count.desired <= var.node_count.max
    error_message = "Need 2 <= min <= desired <= max (two nodes at least, so a drain never takes every replica)."
  }
}

variable "cluster_admin_cidrs" {
  description = "Networks allowed to reach the EKS API endpoint from outside the VPC (CI runners, operators)."
  type        = list(string)

  validation {
    condition     = alltrue([for cidr in var.cluster_admin_cidrs : can(cidrnetmask(cidr)) && cidr != "0.0.0.0/0"])
    error_message = "Each entry must be an IPv4 CIDR, and not 0.0.0.0/0."
  }
}

variable "database_instance_class" {
  description = "RDS instance class of the PostgreSQL (PostGIS) database."
  type        = string
  default     = "db.m7g.large"

  validation {
    condition     = startswith(var.database_instance_class, "db.")
    error_message = "database_instance_class must be an RDS class such as db.m7g.large."
  }
}

variable "database_storage_gb" {
  description = "RDS allocated storage in GiB (grows automatically up to four times this)."
  type        = number
  default     = 100

  validation {
    condition     = var.database_storage_gb >= 20 && var.database_storage_gb <= 16384
    error_message = "database_storage_gb must be between 20 and 16384."
  }
}

variable "kafka_version" {
  description = "Apache Kafka version of the MSK cluster."
  type        = string
  default     = "4.1.x"
}

variable "kafka_instance_type" {
  description = "MSK broker instance type (one broker per availability zone)."
  type        = string
  default     = "kafka.m7g.large"

  validation {
    condition     = startswith(var.kafka_instance_type, "kafka.")
    error_message = "kafka_instance_type must be an MSK type such as kafka.m7g.large."
  }
}

variable "mail_domain" {
  description = "Domain Gatherly sends email from (SES domain identity with DKIM)."
  type        = string

  validation {
    condition     = can(regex("^([a-z0-9-]+\\.)+[a-z]{2,}$", var.mail_domain))
    error_message = "mail_domain must be a domain name such as gatherly.example.org."
  }
}

variable "upload_expiry_days" {
  description = "Days after which uploads that were never completed (objects under uploads/) are deleted; GATHERLY_IMAGE_UPLOAD_TTL_SECONDS is far shorter, so this only catches what the service could not clean."
  type        = number
  default     = 2

  validation {
    condition     = var.upload_expiry_days >= 1 && var.upload_expiry_days <= 30
    error_message = "upload_expiry_days must be between 1 and 30."
  }
}

variable "public_origins" {
  description = "Origins (https://host) whose pages upload images straight to the bucket (its CORS rules)."
  type        = list(string)

  validation {
    condition     = alltrue([for origin in var.public_origins : can(regex("^https://[^/]+$", origin))])
    error_message = "Each origin must be https://host, without a path."
  }
}
