// The content type a stored file is given, by its extension: the same whoever
// uploads it (a worker, or a browser tab through the uploads the edge opens).

const types: Record<string, string> = {
  txt: "text/plain; charset=utf-8",
  nfo: "text/plain; charset=utf-8",
  md: "text/markdown; charset=utf-8",
  srt: "application/x-subrip",
  vtt: "text/vtt",
  json: "application/json",
  xml: "application/xml",
  html: "text/html; charset=utf-8",
  csv: "text/csv",
  pdf: "application/pdf",
  epub: "application/epub+zip",
  zip: "application/zip",
  rar: "application/vnd.rar",
  "7z": "application/x-7z-compressed",
  gz: "application/gzip",
  tar: "application/x-tar",
  iso: "application/x-iso9660-image",
  mp4: "video/mp4",
  m4v: "video/mp4",
  mkv: "video/x-matroska",
  webm: "video/webm",
  avi: "video/x-msvideo",
  mov: "video/quicktime",
  ts: "video/mp2t",
  mp3: "audio/mpeg",
  m4a: "audio/mp4",
  flac: "audio/flac",
  ogg: "audio/ogg",
  opus: "audio/opus",
  wav: "audio/wav",
  jpg: "image/jpeg",
  jpeg: "image/jpeg",
  png: "image/png",
  gif: "image/gif",
  webp: "image/webp",
  svg: "image/svg+xml",
};

export function contentTypeFor(path: string): string {
  const dot = path.lastIndexOf(".");
  const ext = dot >= 0 ? path.slice(dot + 1).toLowerCase() : "";
  return types[ext] ?? "application/octet-stream";
}
