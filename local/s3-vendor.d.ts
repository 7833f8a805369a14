// The parts of s3rver 3.7.1 the local S3 server uses; the package ships no types.

declare module "s3rver" {
  import type { EventEmitter } from "node:events";
  import type { IncomingHttpHeaders, IncomingMessage, Server } from "node:http";
  import type { AddressInfo } from "node:net";
  import type { Readable } from "node:stream";

  export interface S3rverOptions {
    address?: string;
    port?: number;
    silent?: boolean;
    /** Where buckets and objects are stored on disk. */
    directory?: string;
    resetOnClose?: boolean;
    allowMismatchedSignatures?: boolean;
    vhostBuckets?: boolean;
    /** Buckets created (if missing) before the server listens. */
    configureBuckets?: { name: string; configs?: (string | Uint8Array)[] }[];
  }

  /** The slice of Koa's context the middleware here touches. */
  export interface S3rverContext {
    /** The request body stream that s3rver's controllers read; replaceable. */
    req: IncomingMessage | Readable;
    readonly request: { readonly headers: IncomingHttpHeaders };
    readonly method: string;
    readonly path: string;
    readonly query: Record<string, string | string[] | undefined>;
    status: number;
    body: unknown;
    set(field: string, value: string): void;
  }

  export type S3rverMiddleware = (ctx: S3rverContext, next: () => Promise<void>) => Promise<void>;

  export default class S3rver extends EventEmitter {
    constructor(options?: S3rverOptions);
    /** Koa's middleware stack; composed when the server starts listening. */
    middleware: S3rverMiddleware[];
    httpServer?: Server;
    readonly store: import("s3rver/lib/stores/filesystem.js").default;
    run(): Promise<AddressInfo>;
    close(): Promise<void>;
  }
}

declare module "s3rver/lib/models/account.js" {
  /** s3rver's account registry: only access key ids registered here are accepted. */
  export default class AWSAccount {
    static readonly DUMMY_ACCOUNT: AWSAccount;
    readonly id: number;
    readonly displayName: string;
    createKeyPair(accessKeyId: string, secretAccessKey: string): void;
  }
}

declare module "s3rver/lib/models/error.js" {
  /** An error s3rver answers with its S3 code, message and HTTP status. */
  export default class S3Error extends Error {
    constructor(code: string, message: string, detail?: Record<string, string>);
    readonly code: string;
  }
}

declare module "s3rver/lib/stores/filesystem.js" {
  /** Where s3rver keeps buckets, objects and uploads on disk. */
  export default class FilesystemStore {
    getResourcePath(bucket: string, key: string | undefined, resource: string): string;
    /** The bucket, or null if there is none by that name. */
    getBucket(bucket: string): Promise<object | null>;
    initiateUpload(
      bucket: string,
      key: string,
      uploadId: string,
      metadata: Record<string, unknown>,
    ): Promise<void>;
    putMetadata(bucket: string, key: string, metadata: Record<string, string>, md5: string): Promise<void>;
    putPart(
      bucket: string,
      uploadId: string,
      partNumber: number,
      content: import("node:stream").Readable,
    ): Promise<{ md5: string; size: number }>;
    putObjectMultipart(
      bucket: string,
      uploadId: string,
      parts: { number: number; etag: string }[],
    ): Promise<{ md5: string; size: number }>;
  }
}
