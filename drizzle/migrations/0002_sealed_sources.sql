CREATE TYPE "public"."job_source_kind" AS ENUM('torrent', 'magnet');--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "name" text;--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "source_kind" "job_source_kind";--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "source_ciphertext" text;--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "source_iv" text;--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "source_key_id" text;--> statement-breakpoint
-- Jobs from before sources were kept per job downloaded from the shared row's
-- source: they keep that one, now as their own (migrate.ts then encrypts it).
-- A magnet loses its dn on the way: the name was its first submitter's choice.
UPDATE "jobs" SET
	"source_torrent_file" = "torrents"."torrent_file",
	"source_magnet" = CASE WHEN "torrents"."torrent_file" IS NULL THEN
		rtrim(regexp_replace(regexp_replace("torrents"."magnet_uri", '([?&])dn(\.[0-9]+)?=[^&]*', '\1', 'gi'), '([?&])&+', '\1', 'g'), '&')
	END
FROM "torrents"
WHERE "jobs"."torrent_id" = "torrents"."id" AND "jobs"."source_torrent_file" IS NULL AND "jobs"."source_magnet" IS NULL;--> statement-breakpoint
UPDATE "jobs" SET "source_kind" = CASE WHEN "source_torrent_file" IS NOT NULL THEN 'torrent'::"job_source_kind" ELSE 'magnet'::"job_source_kind" END;--> statement-breakpoint
ALTER TABLE "jobs" ALTER COLUMN "source_kind" SET NOT NULL;--> statement-breakpoint
-- The shared row keeps only what its info dictionary says. Its name may have
-- been a magnet's dn and its v2 hash a magnet's claim: both are refilled from
-- the next .torrent or resolved metadata.
ALTER TABLE "torrents" DROP CONSTRAINT "torrents_has_source";--> statement-breakpoint
ALTER TABLE "torrents" ALTER COLUMN "name" DROP NOT NULL;--> statement-breakpoint
UPDATE "torrents" SET "name" = NULL, "info_hash_v2" = NULL;--> statement-breakpoint
ALTER TABLE "torrents" DROP COLUMN "torrent_file";--> statement-breakpoint
ALTER TABLE "torrents" DROP COLUMN "magnet_uri";--> statement-breakpoint
ALTER TABLE "jobs" ADD CONSTRAINT "jobs_source_sealed_whole" CHECK (("jobs"."source_ciphertext" IS NULL) = ("jobs"."source_iv" IS NULL) AND ("jobs"."source_ciphertext" IS NULL) = ("jobs"."source_key_id" IS NULL));--> statement-breakpoint
ALTER TABLE "jobs" ADD CONSTRAINT "jobs_source_plaintext_unsealed_only" CHECK ("jobs"."source_ciphertext" IS NULL OR ("jobs"."source_torrent_file" IS NULL AND "jobs"."source_magnet" IS NULL));--> statement-breakpoint
ALTER TABLE "jobs" ADD CONSTRAINT "jobs_has_source" CHECK ("jobs"."source_ciphertext" IS NOT NULL OR "jobs"."source_torrent_file" IS NOT NULL OR "jobs"."source_magnet" IS NOT NULL);
