// The few DER rules the harness needs to read X.509 fields Node's X509Certificate does not expose raw (the serial's
// content octets, the Authority Key Identifier): tag-length-value reading with bounds checks, nothing more.

export interface Tlv {
  tag: number
  /** The content octets, without tag and length. */
  value: Buffer
  /** Offset just past this element in the buffer it was read from. */
  end: number
}

/** Reads one element at `offset`. Single-byte tags only (all X.509 needs); throws on a truncated or bad length. */
export function readTlv(buf: Buffer, offset = 0): Tlv {
  if (offset + 2 > buf.length) throw new RangeError('DER: truncated element')
  const tag = buf[offset]!
  if ((tag & 0x1f) === 0x1f) throw new RangeError('DER: multi-byte tags are not supported')
  let length = buf[offset + 1]!
  let start = offset + 2
  if (length & 0x80) {
    const count = length & 0x7f
    if (count === 0 || count > 4) throw new RangeError('DER: unsupported length form')
    if (start + count > buf.length) throw new RangeError('DER: truncated length')
    length = 0
    for (let i = 0; i < count; i++) length = length * 256 + buf[start + i]!
    start += count
  }
  const end = start + length
  if (end > buf.length) throw new RangeError('DER: element runs past its container')
  return { tag, value: buf.subarray(start, end), end }
}

/** The elements inside a constructed element's content, in order. */
export function readChildren(content: Buffer): Tlv[] {
  const children: Tlv[] = []
  let offset = 0
  while (offset < content.length) {
    const child = readTlv(content, offset)
    children.push(child)
    offset = child.end
  }
  return children
}
