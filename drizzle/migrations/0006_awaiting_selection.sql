ALTER TYPE "public"."job_state" ADD VALUE 'awaiting_selection' BEFORE 'downloading';--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "choose_files" boolean DEFAULT false NOT NULL;--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "info_dictionary" "bytea";--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "selection_since" timestamp with time zone;--> statement-breakpoint
CREATE INDEX "jobs_selection_since_idx" ON "jobs" USING btree ("selection_since") WHERE selection_since IS NOT NULL;