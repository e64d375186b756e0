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

/**
 * Total observations of histogram `name` (its `+Inf` buckets). parse-prometheus-text-format 1.1.1 drops the
 * labels, `_count` and `_sum` of histogram samples, so this sums over all label sets: use it where one label set
 * is observed.
 */
export function histogramTotal(families: PromFamily[], name: string): number {
  const family = families.find((f) => f.name === name)
  return (family?.metrics ?? []).reduce((sum, m) => sum + Number(m.buckets?.['+Inf'] ?? 0), 0)
}
