// A simulator with one paired Baileys phone, for the api's sandbox tests: what a sandbox
// session looks like to the simulator, without the engine (whose own tests cover it).
// Prints one JSON line {controlPort, jid, lid} once paired; then, per stdin line
// {"send": {"to", "text"}}, the phone sends and prints {"sent": id}; on {"inbox": true}
// it prints {"inbox": [texts the phone received]}; stdin closing ends it.
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { dirname, join } from 'node:path'

// libsignal logs to the console; stdout is this script's protocol, so the console goes
// to stderr.
for (const name of ['log', 'info', 'warn', 'debug']) console[name] = (...args) => console.error(...args)

const here = dirname(fileURLToPath(import.meta.url))
const helpers = await import(join(here, '..', 'engine', 'dist', 'test', 'sim', 'helpers.js'))

const phone = process.argv[2]
const sim = await helpers.startSim()
const control = await helpers.startControl(sim)
const client = await helpers.pairByQr(sim, phone, { bizName: 'Sandbox Shop' })
const port = Number(new URL(control.url).port)
const me = client.sock.user
process.stdout.write(JSON.stringify({ controlPort: port, jid: me?.id, lid: me?.lid }) + '\n')

const texts = () =>
	(client.seen['messages.upsert'] ?? [])
		.flatMap(u => u.messages)
		.filter(m => !m.key.fromMe)
		.map(m => m.message?.conversation ?? m.message?.extendedTextMessage?.text ?? m.message?.imageMessage?.caption ?? null)

for await (const line of createInterface({ input: process.stdin })) {
	const cmd = JSON.parse(line)
	if (cmd.send) {
		const sent = await client.sock.sendMessage(`${cmd.send.to}@s.whatsapp.net`, { text: cmd.send.text })
		process.stdout.write(JSON.stringify({ sent: sent?.key.id }) + '\n')
	} else if (cmd.inbox) {
		process.stdout.write(JSON.stringify({ inbox: texts() }) + '\n')
	}
}
await helpers.endClient(client)
await control.close()
await sim.close()
process.exit(0)
