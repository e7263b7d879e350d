# Email through SES: the sending domain with DKIM (publish the three CNAME records it outputs), a configuration
# set that keeps bounce and complaint reputation metrics, and an SMTP user (SES SMTP credentials are derived
# from an IAM access key; store them in Secrets Manager as gatherly/smtp, see docs/deploy.md).
resource "aws_sesv2_email_identity" "domain" {
  email_identity         = var.domain
  configuration_set_name = aws_sesv2_configuration_set.this.configuration_set_name
}

resource "aws_sesv2_configuration_set" "this" {
  configuration_set_name = var.name
  reputation_options {
    reputation_metrics_enabled = true
  }
  sending_options {
    sending_enabled = true
  }
  delivery_options {
    tls_policy = "REQUIRE"
  }
}

resource "aws_iam_user" "smtp" {
  #checkov:skip=CKV_AWS_273:SES SMTP credentials can only be derived from an IAM user's access key; the user may only send mail.
  name = "${var.name}-smtp"
}

data "aws_iam_policy_document" "send" {
  statement {
    actions   = ["ses:SendRawEmail"]
    resources = [aws_sesv2_email_identity.domain.arn, aws_sesv2_configuration_set.this.arn]
  }
}

resource "aws_iam_policy" "send" {
  name   = "${var.name}-ses-send"
  policy = data.aws_iam_policy_document.send.json
}

resource "aws_iam_user_policy_attachment" "smtp" {
  user       = aws_iam_user.smtp.name
  policy_arn = aws_iam_policy.send.arn
}
