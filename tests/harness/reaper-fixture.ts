/**
 * For tests/reaper.test.ts: a stand-in for a test file that hangs. It starts
 * a daemon and a VM on a test home, prints their pids as one JSON line, and
 * then waits forever, as a file stuck on a peer does until the runner
 * cancels it.
 */
import { startTestDaemon } from './daemon.js';
import { createTestHome, qemuPidsOf } from './vireo.js';

const home = await createTestHome();
const daemon = await startTestDaemon(home);
await home.vireoOk(['vm', 'create', 'hung', '--image', 'tiny', '--memory', '128M', '--no-nic']);
await home.vireoOk(['vm', 'start', 'hung']);
process.stdout.write(`${JSON.stringify({ home: home.home, daemon: daemon.child.pid, qemus: await qemuPidsOf(home.home) })}\n`);
setInterval(() => undefined, 60_000);
