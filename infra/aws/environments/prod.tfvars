# terraform plan -var-file=environments/prod.tfvars
environment         = "prod"
region              = "eu-west-1"
vpc_cidr            = "10.40.0.0/16"
cluster_admin_cidrs = ["203.0.113.0/24"]
mail_domain         = "gatherly.example.org"
public_origins      = ["https://gatherly.example.org"]
node_count          = { desired = 3, min = 3, max = 9 }
