CREATE TYPE "public"."file_state" AS ENUM('pending', 'downloading', 'downloaded', 'uploading', 'uploaded', 'skipped', 'failed');--> statement-breakpoint
CREATE TYPE "public"."job_state" AS ENUM('queued', 'resolving', 'downloading', 'uploading', 'completed', 'failed', 'cancelled');--> statement-breakpoint
CREATE TYPE "public"."storage_kind" AS ENUM('s3', 'gdrive');--> statement-breakpoint
CREATE TYPE "public"."storage_profile_status" AS ENUM('active', 'needs_reconnect');--> statement-breakpoint
CREATE TYPE "public"."transition_cause" AS ENUM('user', 'worker', 'system');--> statement-breakpoint
CREATE TABLE "api_tokens" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"user_id" uuid NOT NULL,
	"name" text NOT NULL,
	"token_hash" text NOT NULL,
	"prefix" text NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"last_used_at" timestamp with time zone,
	"revoked_at" timestamp with time zone,
	CONSTRAINT "api_tokens_token_hash_unique" UNIQUE("token_hash"),
	CONSTRAINT "api_tokens_token_hash_sha256" CHECK ("api_tokens"."token_hash" ~ '^[0-9a-f]{64}$')
);
--> statement-breakpoint
CREATE TABLE "job_files" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"job_id" uuid NOT NULL,
	"file_index" integer NOT NULL,
	"path" text NOT NULL,
	"size" bigint NOT NULL,
	"selected" boolean DEFAULT true NOT NULL,
	"state" "file_state" DEFAULT 'pending' NOT NULL,
	"bytes_downloaded" bigint DEFAULT 0 NOT NULL,
	"bytes_uploaded" bigint DEFAULT 0 NOT NULL,
	"cloud_id" text,
	"cloud_url" text,
	"upload_session" text,
	"checksum" text,
	"error" text,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "job_files_job_id_file_index_unique" UNIQUE("job_id","file_index")
);
--> statement-breakpoint
CREATE TABLE "job_transitions" (
	"id" bigint PRIMARY KEY GENERATED ALWAYS AS IDENTITY (sequence name "job_transitions_id_seq" INCREMENT BY 1 MINVALUE 1 MAXVALUE 9223372036854775807 START WITH 1 CACHE 1),
	"job_id" uuid NOT NULL,
	"from_state" "job_state",
	"to_state" "job_state" NOT NULL,
	"cause" "transition_cause" NOT NULL,
	"attempt" integer NOT NULL,
	"reason" text,
	"at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "jobs" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"user_id" uuid NOT NULL,
	"torrent_id" uuid NOT NULL,
	"storage_profile_id" uuid,
	"state" "job_state" DEFAULT 'queued' NOT NULL,
	"attempt" integer DEFAULT 0 NOT NULL,
	"target_folder" text,
	"failure_reason" text,
	"bytes_total" bigint DEFAULT 0 NOT NULL,
	"bytes_downloaded" bigint DEFAULT 0 NOT NULL,
	"bytes_uploaded" bigint DEFAULT 0 NOT NULL,
	"enqueued_at" timestamp with time zone,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	"started_at" timestamp with time zone,
	"finished_at" timestamp with time zone,
	CONSTRAINT "jobs_attempt_nonnegative" CHECK ("jobs"."attempt" >= 0)
);
--> statement-breakpoint
CREATE TABLE "storage_profiles" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"user_id" uuid NOT NULL,
	"kind" "storage_kind" NOT NULL,
	"name" text NOT NULL,
	"is_default" boolean DEFAULT false NOT NULL,
	"config" jsonb DEFAULT '{}'::jsonb NOT NULL,
	"secret_ciphertext" text NOT NULL,
	"secret_iv" text NOT NULL,
	"secret_key_id" text NOT NULL,
	"status" "storage_profile_status" DEFAULT 'active' NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "storage_profiles_user_id_name_unique" UNIQUE("user_id","name")
);
--> statement-breakpoint
CREATE TABLE "torrents" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"info_hash" text NOT NULL,
	"info_hash_v2" text,
	"name" text NOT NULL,
	"total_size" bigint,
	"piece_length" integer,
	"piece_count" integer,
	"file_count" integer,
	"torrent_file" "bytea",
	"magnet_uri" text,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "torrents_info_hash_unique" UNIQUE("info_hash"),
	CONSTRAINT "torrents_info_hash_hex" CHECK ("torrents"."info_hash" ~ '^[0-9a-f]{40}$'),
	CONSTRAINT "torrents_info_hash_v2_hex" CHECK ("torrents"."info_hash_v2" ~ '^[0-9a-f]{64}$'),
	CONSTRAINT "torrents_has_source" CHECK ("torrents"."torrent_file" IS NOT NULL OR "torrents"."magnet_uri" IS NOT NULL)
);
--> statement-breakpoint
CREATE TABLE "upload_parts" (
	"job_file_id" uuid NOT NULL,
	"part_number" integer NOT NULL,
	"etag" text NOT NULL,
	"size" bigint NOT NULL,
	CONSTRAINT "upload_parts_job_file_id_part_number_pk" PRIMARY KEY("job_file_id","part_number"),
	CONSTRAINT "upload_parts_part_number_range" CHECK ("upload_parts"."part_number" BETWEEN 1 AND 10000)
);
--> statement-breakpoint
CREATE TABLE "users" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"google_sub" text NOT NULL,
	"email" text NOT NULL,
	"name" text,
	"picture_url" text,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"last_login_at" timestamp with time zone,
	CONSTRAINT "users_google_sub_unique" UNIQUE("google_sub")
);
--> statement-breakpoint
ALTER TABLE "api_tokens" ADD CONSTRAINT "api_tokens_user_id_users_id_fk" FOREIGN KEY ("user_id") REFERENCES "public"."users"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "job_files" ADD CONSTRAINT "job_files_job_id_jobs_id_fk" FOREIGN KEY ("job_id") REFERENCES "public"."jobs"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "job_transitions" ADD CONSTRAINT "job_transitions_job_id_jobs_id_fk" FOREIGN KEY ("job_id") REFERENCES "public"."jobs"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "jobs" ADD CONSTRAINT "jobs_user_id_users_id_fk" FOREIGN KEY ("user_id") REFERENCES "public"."users"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "jobs" ADD CONSTRAINT "jobs_torrent_id_torrents_id_fk" FOREIGN KEY ("torrent_id") REFERENCES "public"."torrents"("id") ON DELETE restrict ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "jobs" ADD CONSTRAINT "jobs_storage_profile_id_storage_profiles_id_fk" FOREIGN KEY ("storage_profile_id") REFERENCES "public"."storage_profiles"("id") ON DELETE set null ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "storage_profiles" ADD CONSTRAINT "storage_profiles_user_id_users_id_fk" FOREIGN KEY ("user_id") REFERENCES "public"."users"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "upload_parts" ADD CONSTRAINT "upload_parts_job_file_id_job_files_id_fk" FOREIGN KEY ("job_file_id") REFERENCES "public"."job_files"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "api_tokens_user_id_idx" ON "api_tokens" USING btree ("user_id");--> statement-breakpoint
CREATE INDEX "job_transitions_job_id_at_idx" ON "job_transitions" USING btree ("job_id","at");--> statement-breakpoint
CREATE INDEX "jobs_user_created_idx" ON "jobs" USING btree ("user_id","created_at" DESC NULLS FIRST,"id" DESC NULLS FIRST);--> statement-breakpoint
CREATE INDEX "jobs_state_idx" ON "jobs" USING btree ("state");--> statement-breakpoint
CREATE INDEX "jobs_user_state_idx" ON "jobs" USING btree ("user_id","state");--> statement-breakpoint
CREATE INDEX "jobs_storage_profile_id_idx" ON "jobs" USING btree ("storage_profile_id");--> statement-breakpoint
CREATE INDEX "jobs_torrent_id_idx" ON "jobs" USING btree ("torrent_id");--> statement-breakpoint
CREATE INDEX "jobs_unenqueued_idx" ON "jobs" USING btree ("created_at") WHERE enqueued_at IS NULL;--> statement-breakpoint
CREATE UNIQUE INDEX "storage_profiles_one_default_per_user" ON "storage_profiles" USING btree ("user_id") WHERE is_default;