const mods = process.argv.slice(2);
const rss = () => Math.round(process.memoryUsage().rss/1024/1024*10)/10;
globalThis.gc?.(); const base = rss();
const out = [`base ${base}`];
let prev = base;
for (const m of mods) { await import(m); globalThis.gc?.(); await new Promise(r=>setTimeout(r,50)); const now = rss(); out.push(`${m} +${(now-prev).toFixed(1)} (${now})`); prev = now; }
console.log(out.join('\n'));
