import { isIPv4, isIPv6 } from 'node:net'

/** A listen or dial address. `port` 0 asks the OS for a free port (tests use it). */
export interface HostPort {
  readonly host: string
  readonly port: number
}

const HOSTNAME = /^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/

/** Parses "host:port" or "[v6]:port"; returns undefined when it is not one. */
export function parseHostPort(text: string): HostPort | undefined {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(text)
  if (!m) return undefined
  const port = Number(m[3])
  if (port > 65535) return undefined
  const host = m[1] ?? m[2] ?? ''
  if (m[1] !== undefined) return isIPv6(host) ? { host, port } : undefined
  // All digits and dots is meant as an IPv4 address, not a host name: 300.1.1.1 is an error.
  const valid = /^[\d.]+$/.test(host) ? isIPv4(host) : HOSTNAME.test(host)
  return valid ? { host, port } : undefined
}

export function formatHostPort({ host, port }: HostPort): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`
}

/** True for addresses that only this machine can reach. */
export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host)
}
