ALTER TABLE "jobs" ADD COLUMN "admitted_at" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "claimed_at" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "users" ADD COLUMN "running_limit" integer;--> statement-breakpoint
-- Every job that exists already was put on the queue the old way, with no
-- turn to wait for: it counts as let in, and as claimed once a worker took it.
UPDATE "jobs" SET
	"admitted_at" = coalesce("enqueued_at", "created_at"),
	"claimed_at" = CASE WHEN "attempt" > 0 THEN coalesce("started_at", "updated_at") END;--> statement-breakpoint
CREATE INDEX "jobs_user_held_idx" ON "jobs" USING btree ("user_id","created_at","id") WHERE admitted_at IS NULL AND state = 'queued';