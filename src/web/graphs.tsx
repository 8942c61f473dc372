/**
 * Live usage graphs (uPlot): the daemon keeps the last hour, so the graphs
 * are full when they open; new samples are fetched every 2 s.
 */
import uPlot from 'uplot';
import { useEffect, useRef, useState } from 'preact/hooks';
import type { UsageSample } from '../api/ui.js';
import { api, formatBytes } from './api.js';

type Sample = UsageSample;

const CHARTS: { title: string; series: { label: string; value: (sample: Sample) => number; color: string }[]; format: (value: number) => string }[] = [
  { title: 'CPU', series: [{ label: 'CPU', value: (sample) => sample.cpu * 100, color: '#2563eb' }], format: (value) => `${value.toFixed(0)}%` },
  { title: 'Memory', series: [{ label: 'Used', value: (sample) => sample.memory, color: '#7c3aed' }], format: formatBytes },
  {
    title: 'Disk I/O',
    series: [
      { label: 'Read', value: (sample) => sample.diskRead, color: '#059669' },
      { label: 'Write', value: (sample) => sample.diskWrite, color: '#d97706' },
    ],
    format: (value) => `${formatBytes(value)}/s`,
  },
  {
    title: 'Network I/O',
    series: [
      { label: 'Received', value: (sample) => sample.netReceive ?? 0, color: '#0891b2' },
      { label: 'Sent', value: (sample) => sample.netTransmit ?? 0, color: '#db2777' },
    ],
    format: (value) => `${formatBytes(value)}/s`,
  },
];

function Chart({ samples, chart }: { samples: Sample[]; chart: (typeof CHARTS)[number] }) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot>();
  const last = samples[samples.length - 1];
  const data = (): uPlot.AlignedData => [samples.map((sample) => sample.t / 1000), ...chart.series.map((series) => samples.map(series.value))];
  useEffect(() => {
    if (!box.current) return;
    const width = () => Math.max(240, box.current?.clientWidth ?? 400);
    plot.current = new uPlot(
      {
        width: width(),
        height: 160,
        series: [{}, ...chart.series.map((series) => ({ label: series.label, stroke: series.color, fill: `${series.color}22`, width: 1.5, value: (_u: uPlot, value: number | null) => (value === null ? '–' : chart.format(value)) }))],
        axes: [{}, { values: (_u, values) => values.map((value) => chart.format(value)), size: 70 }],
        scales: { y: { range: (_u, _min, max) => [0, Math.max(max, chart.title === 'CPU' ? 100 : 1024)] } },
        legend: { live: true },
      },
      data(),
      box.current,
    );
    const resize = () => plot.current?.setSize({ width: width(), height: 160 });
    window.addEventListener('resize', resize);
    return () => {
      window.removeEventListener('resize', resize);
      plot.current?.destroy();
    };
  }, []);
  useEffect(() => plot.current?.setData(data()), [samples]);
  return (
    <figure class="chart" data-testid={`chart-${chart.title.replace(/\W+/g, '-')}`} data-points={samples.length} data-peak={Math.max(0, ...samples.flatMap((sample) => chart.series.map((series) => series.value(sample))))}>
      <figcaption>
        {chart.title}
        {/* The latest values, since uPlot's legend shows a value only under the pointer. */}
        {last && <span class="muted small"> {chart.series.map((series) => `${chart.series.length > 1 ? `${series.label} ` : ''}${chart.format(series.value(last))}`).join(', ')}</span>}
      </figcaption>
      <div ref={box} />
    </figure>
  );
}

export default function Graphs({ vm }: { vm: string }) {
  const [samples, setSamples] = useState<Sample[]>([]);
  useEffect(() => {
    let current = true;
    let last = 0;
    let all: Sample[] = [];
    const load = async () => {
      try {
        const history = await api.call('GET /vms/:name/history', { params: { name: vm }, query: { after: last } });
        if (!current || history.samples.length === 0) return;
        last = history.samples[history.samples.length - 1]!.t;
        all = [...all, ...history.samples].slice(-1800);
        setSamples(all);
      } catch {
        // The next tick tries again.
      }
    };
    void load();
    const timer = setInterval(load, 2000);
    return () => {
      current = false;
      clearInterval(timer);
    };
  }, [vm]);
  // Network counters exist only for NICs on Vireo networks (their taps): QEMU keeps none for its user-mode network.
  const network = samples.some((sample) => sample.netReceive !== undefined);
  return (
    <div>
      <p class="muted" data-testid="sample-count">
        {samples.length} samples (one every 2 s, the last hour kept by the daemon).
        {samples.length > 0 && !network && ' No network I/O is drawn: this VM has no NIC on a Vireo network, and QEMU keeps no traffic counters for its user-mode network.'}
      </p>
      <div class="charts">{CHARTS.filter((chart) => network || chart.title !== 'Network I/O').map((chart) => <Chart key={chart.title} chart={chart} samples={samples} />)}</div>
    </div>
  );
}
