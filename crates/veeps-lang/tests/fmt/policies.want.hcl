# Who may do what, for the whole server (IAM is global, like an AWS account; mgmt
# declares it). The groups are the reference's; every human group requires MFA, so a
# new user can only set up a password and an MFA device until they log in with a code:
#   veeps iam password ada          # an administrator sets the first password
#   veeps login ada                 # then: veeps iam mfa create ada, enable, log in again
# The CI user's tokens (auto-deploy) carry no MFA, so that group does not require it.

resource "iam_password_policy" "reference" {
  minimum_password_length      = 16
  require_uppercase_characters = true
  require_lowercase_characters = true
  require_numbers              = true
  require_symbols              = true
  password_reuse_prevention    = 5
}

resource "iam_policy" "developers" {
  name        = "developers"
  description = "read everything, plan everywhere, apply and operate stage"
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      { Effect = "Allow", Action = ["env:Get*", "env:List*", "env:Plan", "compute:List*", "compute:Get*", "lb:List*", "db:Describe*", "db:List*", "obs:*", "logs:*"], Resource = "*" },
      { Effect = "Allow", Action = ["env:Apply", "compute:BuildImage", "db:*", "kms:Encrypt", "kms:Decrypt"], Resource = ["arn:veeps:env:stage:*", "arn:veeps:compute::image/*", "arn:veeps:db:stage:*", "arn:veeps:kms:stage:*"] },
    ]
  })
}

resource "iam_policy" "auto_deploy" {
  name        = "auto-deploy"
  description = "what a pipeline needs to build images and roll them out"
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      { Effect = "Allow", Action = ["env:Get*", "env:Plan", "env:Apply"], Resource = ["arn:veeps:env:stage:*", "arn:veeps:env:prod:*"] },
      { Effect = "Allow", Action = ["compute:BuildImage", "compute:ListImages"], Resource = "*" },
    ]
  })
}

resource "iam_group" "full_access" {
  name     = "full-access"
  policies = ["AdministratorAccess", "RequireMFA"]
}

resource "iam_group" "read_only" {
  name     = "read-only"
  policies = ["ReadOnlyAccess", "RequireMFA"]
}

resource "iam_group" "billing" {
  name     = "billing"
  policies = ["Billing", "RequireMFA"]
}

resource "iam_group" "developers" {
  name     = "developers"
  policies = [iam_policy.developers.name, "RequireMFA"]
}

# Membership of these is what the SSH and VPN parts read.
resource "iam_group" "ssh_users" {
  name = "ssh-users"
}

resource "iam_group" "ssh_sudo_users" {
  name = "ssh-sudo-users"
}

resource "iam_group" "vpn_users" {
  name = "vpn-users"
}

resource "iam_group" "auto_deploy" {
  name     = "auto-deploy"
  policies = [iam_policy.auto_deploy.name]
}

resource "iam_user" "ada" {
  name   = "ada"
  groups = [iam_group.full_access.name, iam_group.ssh_sudo_users.name, iam_group.vpn_users.name]
}

resource "iam_user" "dana" {
  name   = "dana"
  groups = [iam_group.developers.name, iam_group.ssh_users.name, iam_group.vpn_users.name]
}

resource "iam_user" "ci" {
  name   = "ci"
  groups = [iam_group.auto_deploy.name]
  tags   = { purpose = "pipelines" }
}

# Intrusion detection for the server's own listeners: repeated failed API logins or
# tokens, and S3 requests with unknown keys or bad signatures, ban their address in the
# kernel (the host itself is never banned). `veeps bans` lists them, `veeps unban` lifts.
resource "ban_policy" "server" {
  name = "server"
  jail {
    source    = "api"
    max_retry = 5
    find_time = 600
    ban_time  = 600
  }
  jail {
    source    = "s3"
    max_retry = 10
    find_time = 600
    ban_time  = 600
  }
}
