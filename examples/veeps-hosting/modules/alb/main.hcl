# An application load balancer of the reference architecture: public (HTTP 80 and HTTPS
# 443, in public subnets) or internal (HTTPS 443 only, in private-app subnets), with a
# certificate from veeps' CA (or, given an ACME directory, from that CA through DNS-01 in
# veeps' zone), admitting the ranges given. Services claim paths on its
# listeners with listener rules (see asg-service); unclaimed paths get a 404.

variable "name" {
  type = string
}

variable "vpc_id" {
  type = string
}

variable "subnet_ids" {
  type = list(string)
}

variable "internal" {
  type    = bool
  default = false
}

variable "allowed_cidrs" {
  type        = list(string)
  description = "who may connect (the office ranges for stage's public balancer, everyone for prod's)"
}

variable "domain_name" {
  type        = string
  description = "the name on the certificate, like services-stage.veeps-hosting.internal"
}

variable "wildcard" {
  type        = bool
  default     = false
  description = "also put *.domain_name on the certificate"
}

variable "acme_directory" {
  type        = string
  default     = null
  description = "an ACME directory URL (like Let's Encrypt's) to get the certificate from instead of veeps' CA; the name must be in a zone veeps answers for"
}

variable "acme_ca_file" {
  type        = string
  default     = null
  description = "the CA file the ACME server's own TLS chains to (a test server's, like Pebble's)"
}

variable "https_host_port" {
  type        = number
  default     = null
  description = "also answer HTTPS on this port of the host (127.0.0.1), for trying things out"
}

variable "http_host_port" {
  type    = number
  default = null
}

resource "security_group" "lb" {
  vpc_id = var.vpc_id
  ingress {
    protocol    = "tcp"
    from_port   = 80
    to_port     = 80
    cidr_blocks = var.allowed_cidrs
  }
  ingress {
    protocol    = "tcp"
    from_port   = 443
    to_port     = 443
    cidr_blocks = var.allowed_cidrs
  }
  egress {
    protocol    = "all"
    cidr_blocks = ["0.0.0.0/0"]
  }
}

locals {
  acme     = var.acme_directory != null
  wildcard = var.wildcard ? ["*.${var.domain_name}"] : []
}

resource "certificate" "this" {
  domain_name = var.domain_name
  # From veeps' CA, callers inside the VPC may use the balancer's address: it is on the
  # certificate too, and so is 127.0.0.1 when the balancer also answers on the host. A
  # public CA certifies names only.
  subject_alternative_names = local.acme ? local.wildcard : concat(
    local.wildcard,
    [load_balancer.this.dns_name],
    var.https_host_port == null ? [] : ["127.0.0.1"],
  )
  validation_method = local.acme ? "acme_dns" : "internal"
  acme_directory    = var.acme_directory
  acme_ca_file      = var.acme_ca_file
}

resource "load_balancer" "this" {
  name            = var.name
  internal        = var.internal
  subnets         = var.subnet_ids
  security_groups = [security_group.lb.id]
}

resource "listener" "https" {
  load_balancer_arn = load_balancer.this.arn
  port              = 443
  protocol          = "HTTPS"
  certificate_arn   = certificate.this.arn
  host_port         = var.https_host_port
  default_action {
    type = "fixed-response"
    fixed_response {
      status_code  = "404"
      message_body = "not found"
    }
  }
}

resource "listener" "http" {
  count             = var.internal ? 0 : 1
  load_balancer_arn = load_balancer.this.arn
  port              = 80
  host_port         = var.http_host_port
  default_action {
    type = "fixed-response"
    fixed_response {
      status_code  = "404"
      message_body = "not found"
    }
  }
}

output "arn" {
  value = load_balancer.this.arn
}

output "address" {
  value = load_balancer.this.dns_name
}

output "url" {
  value = "https://${load_balancer.this.dns_name}:443"
}

output "security_group_id" {
  value = security_group.lb.id
}

output "listener_arns" {
  value = concat([listener.https.arn], [for l in listener.http : l.arn])
}
