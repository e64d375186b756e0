// Reading /metrics in tests with a real Prometheus text-format parser, and picking samples out of it.
import parsePrometheusTextFormat, { type PromFamily } from 'parse-prometheus-text-format'

export function parseMetrics(text: string): PromFamily[] {
  return parsePrometheusTextFormat(text)
}

/** The value of the sample of `name` whose labels include `labels` (undefined when absent). */
export function sample(families: PromFamily[], name: string, labels: Record<string, string> = {}): number | undefined {
  const family = families.find((f) => f.name === name)
  const found = family?.metrics.find((m) => Object.entries(labels).every(([k, v]) => m.labels?.[k] === v))
  if (found === undefined) return undefined
  return Number(found.value ?? found.count)
}

/** Histogram count of `name` for `labels`. */
export function histogramCount(families: PromFamily[], name: string, labels: Record<string, string>): number {
  const family = families.find((f) => f.name === name)
  const found = family?.metrics.find((m) => Object.entries(labels).every(([k, v]) => m.labels?.[k] === v))
  return Number(found?.count ?? 0)
}
