variable "name" {
  description = "Cluster name."
  type        = string
}

variable "vpc_id" {
  description = "The VPC."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets, one broker in each."
  type        = list(string)
}

variable "client_security_groups" {
  description = "Security groups allowed to connect on 9096."
  type        = list(string)
}

variable "kafka_version" {
  description = "Apache Kafka version."
  type        = string
}

variable "instance_type" {
  description = "Broker instance type."
  type        = string
}
