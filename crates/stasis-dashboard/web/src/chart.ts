// The metrics of an open sandbox over time, sampled by the page (the API answers the
// current value): CPU % and memory, drawn with uPlot.

import uPlot from 'uplot'
import 'uplot/dist/uPlot.min.css'
import type { Metric } from './api'

export class MetricsChart {
  private plot: uPlot
  private data: [number[], number[], number[]] = [[], [], []]

  constructor(host: HTMLElement, private readonly keep = 300) {
    const opts: uPlot.Options = {
      width: Math.max(320, host.clientWidth || 600),
      height: 200,
      title: 'CPU and memory',
      scales: { x: { time: true }, pct: { range: [0, 100] }, mib: { auto: true } },
      series: [
        {},
        { label: 'CPU %', scale: 'pct', stroke: '#2f7de1', width: 2, value: (_u, v) => (v == null ? '—' : `${v.toFixed(1)} %`) },
        { label: 'Memory MiB', scale: 'mib', stroke: '#d9822b', width: 2, value: (_u, v) => (v == null ? '—' : `${v.toFixed(1)} MiB`) },
      ],
      axes: [
        {
          // Whole seconds, as wall-clock times.
          space: 70,
          incrs: [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600],
          values: (_u, ticks) => ticks.map((t) => new Date(t * 1000).toLocaleTimeString([], { hour12: false })),
        },
        { scale: 'pct', label: 'CPU %' }, { scale: 'mib', side: 1, label: 'MiB', grid: { show: false } },
      ],
    }
    this.plot = new uPlot(opts, this.data, host)
    new ResizeObserver(() => {
      if (host.isConnected && host.clientWidth > 0) this.plot.setSize({ width: host.clientWidth, height: 200 })
    }).observe(host)
  }

  get samples(): number {
    return this.data[0].length
  }

  add(m: Metric): void {
    const [t, cpu, mem] = this.data
    if (t.length && t[t.length - 1] >= m.timestampUnix) return
    t.push(m.timestampUnix)
    cpu.push(m.cpuUsedPct)
    mem.push(m.memUsed / (1024 * 1024))
    if (t.length > this.keep) {
      t.shift()
      cpu.shift()
      mem.shift()
    }
    this.plot.setData(this.data)
  }

  destroy(): void {
    this.plot.destroy()
  }
}
