/**
 * The Prometheus text exposition format 0.0.4, nothing Vireo-specific:
 * metric families, samples with labels, escaping, and rendering with every
 * family's samples after its one HELP and TYPE line.
 */
export interface MetricFamily {
  name: string;
  type: 'gauge' | 'counter';
  help: string;
}

export type Labels = Record<string, string>;

/** Label values may hold any text; backslash, double quote and newline are escaped. */
export function escapeLabelValue(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

/** HELP text escapes backslash and newline only (quotes are literal there). */
function escapeHelp(text: string): string {
  return text.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

function formatValue(value: number): string {
  if (Number.isNaN(value)) return 'NaN';
  if (value === Infinity) return '+Inf';
  if (value === -Infinity) return '-Inf';
  return String(value);
}

function formatLabels(labels: Labels): string {
  const pairs = Object.entries(labels).map(([name, value]) => `${name}="${escapeLabelValue(value)}"`);
  return pairs.length === 0 ? '' : `{${pairs.join(',')}}`;
}

/**
 * Samples grouped by family: the format requires all samples of a family to
 * follow its one HELP and TYPE line, whatever order they were added in.
 * Families without samples are left out.
 */
export class Exposition {
  private readonly families = new Map<MetricFamily, { labels: Labels; value: number }[]>();

  add(family: MetricFamily, labels: Labels, value: number): void {
    const samples = this.families.get(family);
    if (samples) samples.push({ labels, value });
    else this.families.set(family, [{ labels, value }]);
  }

  render(): string {
    const lines: string[] = [];
    for (const [family, samples] of this.families) {
      lines.push(`# HELP ${family.name} ${escapeHelp(family.help)}`, `# TYPE ${family.name} ${family.type}`);
      for (const sample of samples) lines.push(`${family.name}${formatLabels(sample.labels)} ${formatValue(sample.value)}`);
    }
    return lines.length === 0 ? '' : `${lines.join('\n')}\n`;
  }
}

export const gauge = (name: string, help: string): MetricFamily => ({ name, type: 'gauge', help });
export const counter = (name: string, help: string): MetricFamily => ({ name, type: 'counter', help });
