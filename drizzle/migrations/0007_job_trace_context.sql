ALTER TABLE "jobs" ADD COLUMN "trace_parent" text;--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "trace_state" text;