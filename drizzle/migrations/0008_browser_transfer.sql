CREATE TYPE "public"."job_runner" AS ENUM('fleet', 'browser');--> statement-breakpoint
ALTER TYPE "public"."transition_cause" ADD VALUE 'browser';--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "runner" "job_runner" DEFAULT 'fleet' NOT NULL;