# Gatherly on AWS: the network, the Kubernetes cluster, PostgreSQL with PostGIS, Kafka, image storage, email and
# the IAM roles the cluster's service accounts take. The Kubernetes side is deploy/k8s/overlays/prod, which reads
# the `k8s_infra_env` output.
locals {
  name = "gatherly-${var.environment}"
  # The Kubernetes namespace the prod/dev overlay deploys into (its IRSA trust names service accounts there).
  namespace = var.environment == "prod" ? "gatherly" : "gatherly-${var.environment}"
}

data "aws_caller_identity" "current" {}

module "vpc" {
  source             = "./modules/vpc"
  name               = local.name
  cidr               = var.vpc_cidr
  availability_zones = var.availability_zones
}

module "eks" {
  source              = "./modules/eks"
  name                = local.name
  kubernetes_version  = var.kubernetes_version
  subnet_ids          = module.vpc.private_subnet_ids
  admin_cidrs         = var.cluster_admin_cidrs
  node_instance_types = var.node_instance_types
  node_count          = var.node_count
}

# Prod only: dev runs PostgreSQL (CloudNativePG) and Kafka (Strimzi) inside its cluster (deploy/k8s/overlays/dev).
module "rds" {
  count                  = var.environment == "prod" ? 1 : 0
  source                 = "./modules/rds"
  name                   = local.name
  vpc_id                 = module.vpc.vpc_id
  subnet_ids             = module.vpc.private_subnet_ids
  client_security_groups = [module.eks.node_security_group_id]
  instance_class         = var.database_instance_class
  storage_gb             = var.database_storage_gb
}

module "msk" {
  count                  = var.environment == "prod" ? 1 : 0
  source                 = "./modules/msk"
  name                   = local.name
  vpc_id                 = module.vpc.vpc_id
  subnet_ids             = module.vpc.private_subnet_ids
  client_security_groups = [module.eks.node_security_group_id]
  kafka_version          = var.kafka_version
  instance_type          = var.kafka_instance_type
}

module "s3" {
  source             = "./modules/s3"
  name               = local.name
  upload_expiry_days = var.upload_expiry_days
  cors_origins       = var.public_origins
}

module "ses" {
  source = "./modules/ses"
  name   = local.name
  domain = var.mail_domain
}

module "irsa" {
  source             = "./modules/irsa"
  name               = local.name
  oidc_provider_arn  = module.eks.oidc_provider_arn
  oidc_issuer        = module.eks.oidc_issuer
  namespace          = local.namespace
  images_bucket_arn  = module.s3.bucket_arn
  images_kms_key_arn = module.s3.kms_key_arn
  secret_arns        = concat(module.rds[*].master_secret_arn, ["arn:aws:secretsmanager:${var.region}:${data.aws_caller_identity.current.account_id}:secret:gatherly/*"])
}
