// Medians, spreads, ratios and Markdown tables: how repeated runs become the figures that are printed.

export function median(values: readonly number[]): number {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b)
  if (v.length === 0) return Number.NaN
  const mid = Math.floor(v.length / 2)
  return v.length % 2 ? v[mid]! : (v[mid - 1]! + v[mid]!) / 2
}

/** Half the min-max range as a percentage of the median ("±x%"); 0 for a single run. */
export function spread(values: readonly number[]): number {
  const v = values.filter((x) => Number.isFinite(x))
  if (v.length < 2) return 0
  const m = median(v)
  return m === 0 ? 0 : ((Math.max(...v) - Math.min(...v)) / 2 / m) * 100
}

export function fmt(value: number, digits = 0): string {
  if (!Number.isFinite(value)) return '–'
  return value.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits })
}

/** "12,345 ±3%" from repeated values. */
export function withSpread(values: readonly number[], digits = 0): string {
  const m = median(values)
  if (!Number.isFinite(m)) return '–'
  return values.length > 1 ? `${fmt(m, digits)} ±${fmt(spread(values), 0)}%` : fmt(m, digits)
}

export function ratio(a: number, b: number): string {
  if (!Number.isFinite(a) || !Number.isFinite(b) || b === 0) return '–'
  return `${(a / b).toFixed(2)}×`
}

export function mib(bytes: number): string {
  return Number.isFinite(bytes) ? fmt(bytes / 2 ** 20, 1) : '–'
}

export function table(headers: string[], rows: string[][]): string {
  const line = (cells: string[]) => `| ${cells.join(' | ')} |`
  return [
    line(headers),
    line(headers.map((h, i) => (i === 0 ? '---' : `${'-'.repeat(Math.max(3, h.length - 1))}:`))),
    ...rows.map(line),
  ].join('\n')
}
