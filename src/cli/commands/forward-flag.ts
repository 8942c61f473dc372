/** The --forward flag of `vm create`, `vm edit` and `vm clone`: [ADDRESS:]HOSTPORT:GUESTPORT[/PROTOCOL]. */
import { invalidArgument } from '../../core/errors.js';

export function parseForward(text: string, index: number): Record<string, unknown> {
  const match = /^(?:(\d{1,3}(?:\.\d{1,3}){3}):)?(\d+):(\d+)(?:\/(tcp|udp))?$/.exec(text);
  if (!match) throw invalidArgument(`--forward`, `'${text}' must look like 2222:22, 0.0.0.0:8080:80 or 5353:53/udp`, { index });
  return {
    hostPort: Number(match[2]),
    guestPort: Number(match[3]),
    ...(match[1] ? { hostAddress: match[1] } : {}),
    ...(match[4] ? { protocol: match[4] } : {}),
  };
}
