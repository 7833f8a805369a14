import { execFileSync } from "node:child_process";
import { afterEach, describe, expect, it } from "vitest";
import { MissingProgramError, requireProgram, spawnService, which } from "./process.ts";

describe("requireProgram", () => {
  afterEach(() => {
    delete process.env.TORRECLOU_NO_AUTO_INSTALL;
  });

  it("finds a program on PATH", () => {
    expect(which("sh")).toMatch(/\/sh$/);
    expect(requireProgram("sh", "dash")).toMatch(/\/sh$/);
  });

  it("names the program and the install command when it is missing", () => {
    process.env.TORRECLOU_NO_AUTO_INSTALL = "1";
    const attempt = () => requireProgram("torreclou-no-such-program", "torreclou-no-such-package");
    expect(attempt).toThrow(MissingProgramError);
    expect(attempt).toThrow(
      '"torreclou-no-such-program" was not found. Install it with: sudo apt-get install -y torreclou-no-such-package',
    );
  });
});

/** Alive and not a zombie (an orphan's exit may wait for a reaper). */
function running(pid: number): boolean {
  try {
    const state = execFileSync("ps", ["-o", "stat=", "-p", String(pid)], { encoding: "utf8" }).trim();
    return state !== "" && !state.startsWith("Z");
  } catch {
    return false;
  }
}

describe("spawnService", () => {
  it("takes the whole process group down on stop", async () => {
    const lines: string[] = [];
    // A shell that starts a grandchild: stopping must end both.
    const service = await spawnService("sleeper", "sh", {
      args: ["-c", "sleep 300 & echo child $!; wait"],
      log: (_name, line) => lines.push(line),
      ready: async () => lines.some((l) => l.startsWith("child ")),
    });
    const grandchild = Number(lines.find((l) => l.startsWith("child "))!.split(" ")[1]);
    await service.stop();
    // SIGKILLed with its group: gone as soon as the kernel has delivered it (the test's timeout bounds the wait).
    while (running(grandchild)) await new Promise((resolve) => setTimeout(resolve, 20));
    expect(running(grandchild)).toBe(false);
  });

  it("reports a service that dies before it is ready, with its last words", async () => {
    await expect(
      spawnService("quitter", "sh", {
        args: ["-c", "echo cannot bind; exit 3"],
        log: () => {},
        ready: async () => false,
      }),
    ).rejects.toThrow(/quitter exited before it was ready:\ncannot bind/);
  });
});
