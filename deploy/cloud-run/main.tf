# keyrotor on Cloud Run: `keyrotor serve` behind Cloud Run IAM, called by Cloud Scheduler (POST /rotate)
# and by a Pub/Sub push subscription carrying Secret Manager rotation notifications (POST /pubsub).
# Rotation state lives in Cloud SQL for PostgreSQL, reached through Cloud Run's built-in Cloud SQL
# connection (a unix socket under /cloudsql): no Filestore, no VPC, no Direct VPC egress.
# Every permission is listed in README.md with the reason for it.

terraform {
  required_version = ">= 1.5"
  required_providers {
    google      = { source = "hashicorp/google", version = ">= 6.0" }
    google-beta = { source = "hashicorp/google-beta", version = ">= 6.0" }
    random      = { source = "hashicorp/random", version = ">= 3.5" }
  }
}

variable "project" { type = string }
variable "region" { type = string }
variable "image" {
  type        = string
  description = "the image built from deploy/Dockerfile, e.g. europe-west1-docker.pkg.dev/p/r/keyrotor:1"
}
variable "secret_id" {
  type        = string
  description = "the Secret Manager secret keyrotor rotates (a gcp-secret-manager store in the config)"
  default     = "openai-api-key"
}
variable "rotation_period" {
  type        = string
  description = "Secret Manager rotation period: SECRET_ROTATE notifications arrive this often"
  default     = "2592000s" # 30 days
}
variable "admin_key_secret_id" {
  type        = string
  description = "secret holding the OpenAI admin key (mounted as OPENAI_ADMIN_KEY)"
  default     = "keyrotor-openai-admin-key"
}
variable "config_secret_id" {
  type        = string
  description = "secret holding rotation.config.yaml (mounted at /etc/keyrotor)"
  default     = "keyrotor-config"
}
variable "sql_instance_name" {
  type        = string
  description = "the Cloud SQL for PostgreSQL instance holding rotation state"
  default     = "keyrotor-state"
}
variable "sql_tier" {
  type        = string
  description = "machine tier: state is a few kilobytes, the smallest shared-core tier is plenty"
  default     = "db-f1-micro"
}
variable "database_url_secret_id" {
  type        = string
  description = "secret Terraform writes the database URL into (exposed as KEYROTOR_DATABASE_URL)"
  default     = "keyrotor-database-url"
}

locals {
  audience = "keyrotor-rotate" # custom audience: checked by Cloud Run IAM and again by keyrotor
  # the config says state: { type: postgres, urlEnv: KEYROTOR_DATABASE_URL }
  database_env = "KEYROTOR_DATABASE_URL"
  # node-postgres: an empty host plus ?host=<dir> connects over the unix socket Cloud Run mounts
  database_url = format(
    "postgresql://%s:%s@/%s?host=/cloudsql/%s",
    google_sql_user.keyrotor.name,
    random_password.database.result,
    google_sql_database.keyrotor.name,
    google_sql_database_instance.state.connection_name,
  )
}

data "google_project" "this" { project_id = var.project }

# ------------------------------------------------------------------ identities

resource "google_service_account" "runtime" {
  project      = var.project
  account_id   = "keyrotor-runtime"
  display_name = "keyrotor (Cloud Run runtime)"
}
resource "google_service_account" "scheduler" {
  project      = var.project
  account_id   = "keyrotor-scheduler"
  display_name = "keyrotor caller (Cloud Scheduler)"
}
resource "google_service_account" "push" {
  project      = var.project
  account_id   = "keyrotor-push"
  display_name = "keyrotor caller (Pub/Sub push)"
}

# ------------------------------------------------------------------ the rotated secret + notifications

resource "google_pubsub_topic" "secret_events" {
  project = var.project
  name    = "keyrotor-secret-events"
}

# Secret Manager's service agent publishes the notifications
resource "google_project_service_identity" "secretmanager" {
  provider = google-beta
  project  = var.project
  service  = "secretmanager.googleapis.com"
}
resource "google_pubsub_topic_iam_member" "secretmanager_publishes" {
  project = var.project
  topic   = google_pubsub_topic.secret_events.name
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${google_project_service_identity.secretmanager.email}"
}

resource "google_secret_manager_secret" "rotated" {
  project   = var.project
  secret_id = var.secret_id
  replication {
    auto {}
  }
  topics {
    name = google_pubsub_topic.secret_events.id
  }
  rotation {
    rotation_period    = var.rotation_period
    next_rotation_time = timeadd(plantimestamp(), "1h")
  }
  lifecycle {
    ignore_changes = [rotation[0].next_rotation_time, version_aliases, annotations]
  }
  depends_on = [google_pubsub_topic_iam_member.secretmanager_publishes]
}

# the side secret staged (not yet verified) values wait in; created here so that the runtime needs no
# project-wide secretmanager.secrets.create (the store config sets createPendingSecret: false)
resource "google_secret_manager_secret" "pending" {
  project   = var.project
  secret_id = "${var.secret_id}-keyrotor-pending"
  labels    = { keyrotor-role = "pending" }
  replication {
    auto {}
  }
  lifecycle {
    ignore_changes = [version_aliases, annotations]
  }
}

# exactly what the gcp-secret-manager store calls, on the rotated secret and its side secret only
resource "google_project_iam_custom_role" "rotator" {
  project = var.project
  role_id = "keyrotorSecretRotator"
  title   = "keyrotor secret rotator"
  permissions = [
    "secretmanager.secrets.get",      # read aliases (current/previous, side: pending), etag, annotations
    "secretmanager.secrets.update",   # move aliases with the etag as compare-and-swap
    "secretmanager.versions.add",     # stage in the side secret; add the verified (or restored) value
    "secretmanager.versions.access",  # read values (preflight, verify)
    "secretmanager.versions.get",     # version state
    "secretmanager.versions.list",    # find this rotation's version after a crash
    "secretmanager.versions.disable", # retire a rolled-back or already copied version
    "secretmanager.versions.destroy", # destroy a rolled-back version that never served
  ]
}
resource "google_secret_manager_secret_iam_member" "runtime_rotates" {
  project   = var.project
  secret_id = google_secret_manager_secret.rotated.secret_id
  role      = google_project_iam_custom_role.rotator.id
  member    = "serviceAccount:${google_service_account.runtime.email}"
}
resource "google_secret_manager_secret_iam_member" "runtime_stages" {
  project   = var.project
  secret_id = google_secret_manager_secret.pending.secret_id
  role      = google_project_iam_custom_role.rotator.id
  member    = "serviceAccount:${google_service_account.runtime.email}"
}

# the admin key and the config are read at start, nothing else
resource "google_secret_manager_secret_iam_member" "runtime_reads_admin_key" {
  project   = var.project
  secret_id = var.admin_key_secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.runtime.email}"
}
resource "google_secret_manager_secret_iam_member" "runtime_reads_config" {
  project   = var.project
  secret_id = var.config_secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.runtime.email}"
}

# ------------------------------------------------------------------ state: Cloud SQL for PostgreSQL

resource "google_project_service" "sqladmin" {
  project            = var.project
  service            = "sqladmin.googleapis.com" # the Cloud SQL connector calls the Admin API
  disable_on_destroy = false
}

resource "google_sql_database_instance" "state" {
  project             = var.project
  name                = var.sql_instance_name
  region              = var.region
  database_version    = "POSTGRES_17"
  deletion_protection = true # holds which rotations are unfinished
  settings {
    edition           = "ENTERPRISE" # shared-core tiers exist in this edition only
    tier              = var.sql_tier
    availability_type = "ZONAL"
    disk_size         = 10
    ip_configuration {
      # public IP without authorized networks: only IAM-authorized connectors (Cloud Run's, the
      # Cloud SQL Auth Proxy) can connect, each with a client certificate
      ipv4_enabled = true
      ssl_mode     = "TRUSTED_CLIENT_CERTIFICATE_REQUIRED"
    }
    backup_configuration {
      enabled                        = true
      point_in_time_recovery_enabled = true
    }
  }
  depends_on = [google_project_service.sqladmin]
}

resource "google_sql_database" "keyrotor" {
  project  = var.project
  instance = google_sql_database_instance.state.name
  name     = "keyrotor"
}

# URL-safe (letters and digits), so the password needs no escaping in the database URL
resource "random_password" "database" {
  length  = 32
  special = false
}

resource "google_sql_user" "keyrotor" {
  project  = var.project
  instance = google_sql_database_instance.state.name
  name     = "keyrotor"
  password = random_password.database.result
}

resource "google_secret_manager_secret" "database_url" {
  project   = var.project
  secret_id = var.database_url_secret_id
  replication {
    auto {}
  }
}
resource "google_secret_manager_secret_version" "database_url" {
  secret      = google_secret_manager_secret.database_url.id
  secret_data = local.database_url
}

# Cloud SQL has no per-instance IAM policy: the role is granted on the project, limited to this
# instance by an IAM condition
resource "google_project_iam_member" "runtime_connects_to_state" {
  project = var.project
  role    = "roles/cloudsql.client"
  member  = "serviceAccount:${google_service_account.runtime.email}"
  condition {
    title = "keyrotor state instance only"
    expression = join(" && ", [
      "resource.type == \"sqladmin.googleapis.com/Instance\"",
      "resource.name == \"projects/${var.project}/instances/${google_sql_database_instance.state.name}\"",
    ])
  }
}
resource "google_secret_manager_secret_iam_member" "runtime_reads_database_url" {
  project   = var.project
  secret_id = google_secret_manager_secret.database_url.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.runtime.email}"
}

# ------------------------------------------------------------------ the service

resource "google_cloud_run_v2_service" "keyrotor" {
  project             = var.project
  name                = "keyrotor"
  location            = var.region
  ingress             = "INGRESS_TRAFFIC_ALL" # Scheduler and Pub/Sub push; IAM + token checks below
  custom_audiences    = [local.audience]
  deletion_protection = false

  template {
    service_account                  = google_service_account.runtime.email
    timeout                          = "300s"
    max_instance_request_concurrency = 4
    scaling {
      min_instance_count = 0
      max_instance_count = 1 # leases serialize per key anyway; one instance keeps it simple
    }
    containers {
      image = var.image
      args = [
        "serve",
        "--audience", local.audience,
        "--allowed-email", "${google_service_account.scheduler.email},${google_service_account.push.email}",
        "--request-timeout", "300s",
      ]
      env {
        name = local.database_env
        value_source {
          secret_key_ref {
            secret  = google_secret_manager_secret.database_url.secret_id
            version = "latest"
          }
        }
      }
      env {
        name = "OPENAI_ADMIN_KEY"
        value_source {
          secret_key_ref {
            secret  = var.admin_key_secret_id
            version = "latest"
          }
        }
      }
      volume_mounts {
        name       = "config"
        mount_path = "/etc/keyrotor"
      }
      volume_mounts {
        name       = "cloudsql"
        mount_path = "/cloudsql"
      }
      startup_probe {
        http_get { path = "/healthz" }
      }
      liveness_probe {
        http_get { path = "/healthz" }
      }
    }
    volumes {
      name = "config"
      secret {
        secret = var.config_secret_id
        items {
          version = "latest"
          path    = "rotation.config.yaml"
        }
      }
    }
    volumes {
      name = "cloudsql"
      cloud_sql_instance {
        instances = [google_sql_database_instance.state.connection_name]
      }
    }
  }
  depends_on = [
    google_project_iam_member.runtime_connects_to_state,
    google_secret_manager_secret_iam_member.runtime_reads_database_url,
    google_secret_manager_secret_version.database_url,
  ]
}

# `keyrotor state init` (versioned schema migrations, idempotent): run once after apply and after
# each upgrade of the image: gcloud run jobs execute keyrotor-state-init --region $REGION --wait
resource "google_cloud_run_v2_job" "state_init" {
  project             = var.project
  name                = "keyrotor-state-init"
  location            = var.region
  deletion_protection = false
  template {
    task_count = 1
    template {
      service_account = google_service_account.runtime.email
      timeout         = "300s"
      max_retries     = 1
      containers {
        image = var.image
        args  = ["state", "init"]
        env {
          name = local.database_env
          value_source {
            secret_key_ref {
              secret  = google_secret_manager_secret.database_url.secret_id
              version = "latest"
            }
          }
        }
        volume_mounts {
          name       = "config"
          mount_path = "/etc/keyrotor"
        }
        volume_mounts {
          name       = "cloudsql"
          mount_path = "/cloudsql"
        }
      }
      volumes {
        name = "config"
        secret {
          secret = var.config_secret_id
          items {
            version = "latest"
            path    = "rotation.config.yaml"
          }
        }
      }
      volumes {
        name = "cloudsql"
        cloud_sql_instance {
          instances = [google_sql_database_instance.state.connection_name]
        }
      }
    }
  }
  depends_on = [
    google_project_iam_member.runtime_connects_to_state,
    google_secret_manager_secret_iam_member.runtime_reads_database_url,
    google_secret_manager_secret_version.database_url,
  ]
}

# only the two callers may invoke (Cloud Run checks the token before keyrotor checks it again)
resource "google_cloud_run_v2_service_iam_member" "scheduler_invokes" {
  project  = var.project
  location = var.region
  name     = google_cloud_run_v2_service.keyrotor.name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.scheduler.email}"
}
resource "google_cloud_run_v2_service_iam_member" "push_invokes" {
  project  = var.project
  location = var.region
  name     = google_cloud_run_v2_service.keyrotor.name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.push.email}"
}

# ------------------------------------------------------------------ callers

resource "google_cloud_scheduler_job" "rotate" {
  project   = var.project
  region    = var.region
  name      = "keyrotor-rotate"
  schedule  = "17 * * * *" # hourly: each key's own schedule.every decides what is due
  time_zone = "Etc/UTC"
  retry_config {
    retry_count = 0 # the next run resumes anything unfinished
  }
  http_target {
    http_method = "POST"
    uri         = "${google_cloud_run_v2_service.keyrotor.uri}/rotate"
    body        = base64encode("{}")
    headers     = { "Content-Type" = "application/json" }
    oidc_token {
      service_account_email = google_service_account.scheduler.email
      audience              = local.audience
    }
  }
}

# Pub/Sub mints the push OIDC token as the push service account
resource "google_service_account_iam_member" "pubsub_mints_push_tokens" {
  service_account_id = google_service_account.push.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
}

resource "google_pubsub_topic" "dead_letter" {
  project = var.project
  name    = "keyrotor-secret-events-dead-letter"
}

resource "google_pubsub_subscription" "push" {
  project              = var.project
  name                 = "keyrotor-push"
  topic                = google_pubsub_topic.secret_events.id
  ack_deadline_seconds = 600
  push_config {
    push_endpoint = "${google_cloud_run_v2_service.keyrotor.uri}/pubsub"
    oidc_token {
      service_account_email = google_service_account.push.email
      audience              = local.audience
    }
  }
  # 503 = the rotation paused at the request deadline: redelivered, the next delivery resumes it
  retry_policy {
    minimum_backoff = "30s"
    maximum_backoff = "600s"
  }
  # 400 (not a Secret Manager notification) lands here after a few attempts instead of looping
  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter.id
    max_delivery_attempts = 5
  }
}

# dead-lettering: Pub/Sub's service agent forwards from the subscription to the dead-letter topic
resource "google_pubsub_topic_iam_member" "pubsub_dead_letters" {
  project = var.project
  topic   = google_pubsub_topic.dead_letter.name
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
}
resource "google_pubsub_subscription_iam_member" "pubsub_acks_dead_letters" {
  project      = var.project
  subscription = google_pubsub_subscription.push.name
  role         = "roles/pubsub.subscriber"
  member       = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
}

output "url" { value = google_cloud_run_v2_service.keyrotor.uri }
output "sql_connection_name" {
  description = "for the Cloud SQL Auth Proxy: cloud-sql-proxy <this> --unix-socket /tmp/cloudsql"
  value       = google_sql_database_instance.state.connection_name
}
output "state_init_job" { value = google_cloud_run_v2_job.state_init.name }
