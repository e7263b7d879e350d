# terraform plan -var-file=environments/dev.tfvars
environment             = "dev"
region                  = "eu-west-1"
vpc_cidr                = "10.41.0.0/16"
cluster_admin_cidrs     = ["203.0.113.0/24"]
mail_domain             = "dev.gatherly.example.org"
public_origins          = ["https://dev.gatherly.example.org"]
node_count              = { desired = 2, min = 2, max = 4 }
database_instance_class = "db.t4g.medium"
kafka_instance_type     = "kafka.t3.small"
