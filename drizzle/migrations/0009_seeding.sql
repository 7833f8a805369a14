ALTER TABLE "jobs" ADD COLUMN "seed_ratio" double precision;--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "seed_minutes" integer;