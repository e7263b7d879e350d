# Kafka on MSK: one broker per private subnet, TLS in transit (client and between brokers), encrypted at rest,
# SASL/SCRAM clients (users in Secrets Manager, names AmazonMSK_<cluster>_<user>), broker logs to CloudWatch,
# topics made by `gatherly` (auto-creation off), reachable from the cluster's security group only.
resource "aws_security_group" "this" {
  name        = "${var.name}-kafka"
  description = "Kafka SASL/SCRAM over TLS: from the EKS cluster only"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "clients" {
  for_each                     = toset(var.client_security_groups)
  security_group_id            = aws_security_group.this.id
  description                  = "Kafka SASL/SCRAM from the cluster"
  referenced_security_group_id = each.value
  ip_protocol                  = "tcp"
  from_port                    = 9096
  to_port                      = 9096
}

resource "aws_kms_key" "this" {
  #checkov:skip=CKV2_AWS_64:The default key policy (the account's IAM decides who uses the key) is intended; IAM policies grant its use.
  description         = "${var.name} MSK storage and SCRAM secrets"
  enable_key_rotation = true
}

resource "aws_msk_configuration" "this" {
  name           = var.name
  kafka_versions = [var.kafka_version]
  server_properties = join("\n", [
    "auto.create.topics.enable=false",
    "default.replication.factor=3",
    "min.insync.replicas=2",
    "unclean.leader.election.enable=false",
  ])
}

resource "aws_cloudwatch_log_group" "brokers" {
  name              = "/gatherly/${var.name}/msk"
  retention_in_days = 365
  kms_key_id        = aws_kms_key.this.arn
}

resource "aws_msk_cluster" "this" {
  cluster_name           = var.name
  kafka_version          = var.kafka_version
  number_of_broker_nodes = length(var.subnet_ids)

  broker_node_group_info {
    instance_type   = var.instance_type
    client_subnets  = var.subnet_ids
    security_groups = [aws_security_group.this.id]
    storage_info {
      ebs_storage_info {
        volume_size = 200
      }
    }
  }

  configuration_info {
    arn      = aws_msk_configuration.this.arn
    revision = aws_msk_configuration.this.latest_revision
  }

  encryption_info {
    encryption_at_rest_kms_key_arn = aws_kms_key.this.arn
    encryption_in_transit {
      client_broker = "TLS"
      in_cluster    = true
    }
  }

  client_authentication {
    unauthenticated = false
    sasl {
      scram = true
    }
  }

  logging_info {
    broker_logs {
      cloudwatch_logs {
        enabled   = true
        log_group = aws_cloudwatch_log_group.brokers.name
      }
    }
  }
}
