ALTER TABLE "jobs" ADD COLUMN "source_torrent_file" bytea;--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "source_magnet" text;