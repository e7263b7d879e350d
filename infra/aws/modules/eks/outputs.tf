output "cluster_name" {
  description = "The cluster's name."
  value       = aws_eks_cluster.this.name
}

output "oidc_provider_arn" {
  description = "The IAM OIDC provider of the cluster's service account tokens."
  value       = aws_iam_openid_connect_provider.this.arn
}

output "oidc_issuer" {
  description = "The cluster's OIDC issuer URL without https://."
  value       = replace(aws_eks_cluster.this.identity[0].oidc[0].issuer, "https://", "")
}

output "node_security_group_id" {
  description = "The security group EKS gives the cluster and its managed nodes (pods use it)."
  value       = aws_eks_cluster.this.vpc_config[0].cluster_security_group_id
}
