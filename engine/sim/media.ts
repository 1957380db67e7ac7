import { createServer, type Server } from 'node:https'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { existsSync, mkdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import type { AddressInfo } from 'node:net'
import { writeFileAtomic } from './fsutil.js'
import type { Logger } from './log.js'

const MAX_UPLOAD = 100 * 1024 * 1024
export const MEDIA_AUTH = 'wa-sim-media'

/**
 * The CDN: Baileys uploads already-encrypted media here (POST .../<encSha256>?auth=)
 * and downloads it back by direct path. Blobs live in memory or under data-dir/media.
 */
export class MediaServer {
	private server?: Server
	private readonly blobs = new Map<string, Buffer>()
	private readonly dir?: string
	port = 0
	uploads = 0
	downloads = 0

	constructor(
		private readonly tls: { key: string; cert: string },
		dataDir: string | undefined,
		inMemory: boolean,
		private readonly log: Logger
	) {
		if (!inMemory && dataDir) {
			this.dir = join(dataDir, 'media')
			mkdirSync(this.dir, { recursive: true })
		}
	}

	async listen(port: number, host = '127.0.0.1'): Promise<void> {
		this.server = createServer({ key: this.tls.key, cert: this.tls.cert }, (req, res) => this.onRequest(req, res))
		await new Promise<void>((resolve, reject) => {
			this.server!.once('error', reject)
			this.server!.listen(port, host, () => resolve())
		})
		this.port = (this.server.address() as AddressInfo).port
	}

	get host(): string {
		return `127.0.0.1:${this.port}`
	}

	/** Stores a blob directly (used when the simulator itself sends media as a contact). */
	put(data: Buffer): { url: string; directPath: string } {
		const id = randomBytes(12).toString('hex')
		if (this.dir) writeFileAtomic(join(this.dir, id), data)
		else this.blobs.set(id, data)
		const directPath = `/d/${id}`
		return { url: `https://${this.host}${directPath}`, directPath }
	}

	get(directPath: string): Buffer | undefined {
		const id = /^\/d\/([0-9a-f]{24})$/.exec(directPath)?.[1]
		if (!id) return undefined
		if (this.dir) {
			const file = join(this.dir, id)
			return existsSync(file) ? readFileSync(file) : undefined
		}
		return this.blobs.get(id)
	}

	private onRequest(req: IncomingMessage, res: ServerResponse): void {
		const url = new URL(req.url ?? '/', `https://${this.host}`)
		if (req.method === 'POST' && url.pathname.startsWith('/mms/')) return this.onUpload(req, res, url)
		if (req.method === 'GET' || req.method === 'HEAD') {
			const data = this.get(url.pathname)
			if (!data) return this.json(res, 404, { error: 'not found' })
			this.downloads++
			res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': data.length })
			res.end(req.method === 'HEAD' ? undefined : data)
			return
		}
		this.json(res, 404, { error: 'not found' })
	}

	private onUpload(req: IncomingMessage, res: ServerResponse, url: URL): void {
		if (url.searchParams.get('auth') !== MEDIA_AUTH) return this.json(res, 401, { error: 'bad auth' })
		const chunks: Buffer[] = []
		let size = 0
		req.on('data', (c: Buffer) => {
			size += c.length
			if (size > MAX_UPLOAD) {
				this.json(res, 413, { error: 'too large' })
				req.destroy()
				return
			}
			chunks.push(c)
		})
		req.on('end', () => {
			if (res.headersSent) return
			const { url: mediaUrl, directPath } = this.put(Buffer.concat(chunks))
			this.uploads++
			this.log.debug({ directPath, size }, 'media uploaded')
			this.json(res, 200, { url: mediaUrl, direct_path: directPath })
		})
	}

	private json(res: ServerResponse, status: number, body: unknown): void {
		if (res.headersSent) return
		res.writeHead(status, { 'content-type': 'application/json' })
		res.end(JSON.stringify(body))
	}

	async close(): Promise<void> {
		if (!this.server) return
		this.server.closeAllConnections()
		await new Promise<void>(resolve => this.server!.close(() => resolve()))
	}
}
