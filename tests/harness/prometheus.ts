/**
 * Reading Prometheus text exposition in tests: checks the format's rules and
 * returns the samples by series.
 */
import assert from 'node:assert/strict';

/**
 * Checks the text against the format's rules (each family's HELP and TYPE
 * once, before all of its samples, which are contiguous) and returns every
 * sample by its series, e.g. `vireo_vm_vcpus{vm="a"}`.
 */
export function parseExposition(text: string): Map<string, number> {
  assert.ok(text.endsWith('\n'), 'the text ends with a newline');
  const samples = new Map<string, number>();
  const seen = new Set<string>();
  let family: string | undefined;
  const lines = text.slice(0, -1).split('\n');
  for (let index = 0; index < lines.length; index += 1) {
    const line = lines[index]!;
    const help = /^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) \S/.exec(line);
    if (help) {
      const name = help[1]!;
      assert.ok(!seen.has(name), `${name} is described once`);
      assert.match(lines[index + 1] ?? '', new RegExp(`^# TYPE ${name} (gauge|counter)$`));
      seen.add(name);
      family = name;
      index += 1;
      continue;
    }
    const sample = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*",?)*\})? (\S+)$/.exec(line);
    assert.ok(sample, `a valid sample line: ${line}`);
    assert.equal(sample[1], family, `${line} follows the HELP and TYPE of its own family`);
    const series = line.slice(0, line.lastIndexOf(' '));
    assert.ok(!samples.has(series), `${series} appears once`);
    samples.set(series, Number(sample[3]));
  }
  return samples;
}

export function valueOf(samples: Map<string, number>, series: string): number {
  const value = samples.get(series);
  assert.ok(value !== undefined, `${series} is present`);
  return value;
}

