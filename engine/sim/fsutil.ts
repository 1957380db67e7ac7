import { renameSync, writeFileSync } from 'node:fs'

let seq = 0

/** Write-then-rename so a crash never leaves a half-written state file behind. */
export function writeFileAtomic(path: string, data: string | Uint8Array, mode = 0o644): void {
	const tmp = `${path}.${process.pid}.${++seq}.tmp`
	writeFileSync(tmp, data, { mode })
	renameSync(tmp, path)
}
