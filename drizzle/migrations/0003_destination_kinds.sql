ALTER TYPE "public"."storage_kind" ADD VALUE 'onedrive';--> statement-breakpoint
ALTER TYPE "public"."storage_kind" ADD VALUE 'dropbox';