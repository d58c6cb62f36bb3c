// The reference PDS and PLC directory in one Node process, for the
// end-to-end test through a PDS (scripts/e2e-pds; scripts/pds-start runs
// this file). @atproto/dev-env's TestNetworkNoAppView starts a PLC directory
// (in memory) and a PDS in dev mode, whose fetches and proxied calls may go
// to http://localhost (SSRF protection off), so a did:web:localhost%3A<port>
// service DID resolves to a service on this machine.
//
// Creates the accounts alice.test and bob.test, prints one JSON line
//   {"pds": URL, "plc": URL, "accounts": {"alice": {did, handle, password}, ...}}
// when everything is up, and stays up until SIGTERM or SIGINT.
// PDS_PORT and PLC_PORT choose the ports (default: free ones).

import { randomBytes } from 'node:crypto'
import { TestNetworkNoAppView } from '@atproto/dev-env'

// `{ port }` only when set: dev-env spreads this over its own settings, where
// an explicit `port: undefined` would replace the port it picked.
const port = (name) => {
  const value = process.env[name]
  return value ? { port: Number.parseInt(value, 10) } : {}
}

const network = await TestNetworkNoAppView.create({
  plc: port('PLC_PORT'),
  pds: port('PDS_PORT'),
})

const createAccount = async (name) => {
  const handle = `${name}.test`
  const password = randomBytes(12).toString('hex')
  const response = await fetch(
    `${network.pds.url}/xrpc/com.atproto.server.createAccount`,
    {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ handle, password, email: `${name}@example.test` }),
    },
  )
  const body = await response.json()
  if (!response.ok) {
    throw new Error(`createAccount ${handle}: ${response.status} ${JSON.stringify(body)}`)
  }
  return { did: body.did, handle, password }
}

let closing = false
const close = async () => {
  if (closing) return
  closing = true
  // Whatever a server's close waits for, the process ends within seconds.
  setTimeout(() => process.exit(0), 5000).unref()
  try {
    await network.close()
  } finally {
    process.exit(0)
  }
}
process.on('SIGTERM', close)
process.on('SIGINT', close)

try {
  const accounts = {
    alice: await createAccount('alice'),
    bob: await createAccount('bob'),
  }
  const ready = { pds: network.pds.url, plc: network.plc.url, accounts }
  process.stdout.write(`${JSON.stringify(ready)}\n`)
} catch (error) {
  console.error(error)
  await network.close()
  process.exit(1)
}
