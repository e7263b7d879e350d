# Terraform and provider versions, and the remote state: an S3 bucket with S3-native locking (use_lockfile).
# The bucket is made once by hand (docs/deploy.md); each environment has its own state key:
#   terraform init -backend-config="key=gatherly/prod/terraform.tfstate"
terraform {
  required_version = ">= 1.10"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      # 5.100 is the newest 5.x (the one `make deploy-check` validates with); 6.x is admitted too.
      version = ">= 5.100, < 7.0"
    }
  }

  backend "s3" {
    bucket       = "gatherly-terraform-state"
    region       = "eu-west-1"
    encrypt      = true
    use_lockfile = true
  }
}

provider "aws" {
  region = var.region

  default_tags {
    tags = {
      Project     = "gatherly"
      Environment = var.environment
      ManagedBy   = "terraform"
    }
  }
}
