/**
 * The `makeWASocket` options of a gateway socket. Three layers, later wins:
 * 1. gateway defaults: no history sync, no full sync, no link previews, not "online" on
 *    connect, no per-socket recent-message cache (it keeps a timer per entry; messaging
 *    answers retries through `getMessage` from its own bounded store);
 * 2. what feature modules contribute (`SocketConfigContributor`, e.g. `getMessage`);
 * 3. what the manager owns: auth, logger, the upstream's URL and the shared caches.
 */
import { Browsers, isJidBroadcast, isJidNewsletter, type AuthenticationState, type UserFacingSocketConfig } from '@whiskeysockets/baileys'
import type { Logger } from '../log.js'
import type { SocketCaches } from './socket-caches.js'

export const GATEWAY_DEFAULTS: Partial<UserFacingSocketConfig> = {
	browser: Browsers.ubuntu('Chrome'),
	markOnlineOnConnect: false,
	syncFullHistory: false,
	shouldSyncHistoryMessage: () => false,
	generateHighQualityLinkPreview: false,
	enableRecentMessageCache: false,
	// Status posts and channels are not chats a gateway serves; skipping them saves the
	// decryption work and the events.
	shouldIgnoreJid: (jid: string) => isJidBroadcast(jid) || isJidNewsletter(jid),
	// A message Baileys cannot find for a retry is not re-sent; messaging contributes the real one.
	getMessage: async () => undefined,
	connectTimeoutMs: 20_000,
	defaultQueryTimeoutMs: 60_000,
}

export interface OwnedSocketConfig {
	auth: AuthenticationState
	logger: Logger
	wsUrl: string | undefined
	caches: SocketCaches
}

export function buildSocketConfig(contributed: Partial<UserFacingSocketConfig>[], owned: OwnedSocketConfig): UserFacingSocketConfig {
	const { groups: _groups, ...caches } = owned.caches
	return {
		...GATEWAY_DEFAULTS,
		...Object.assign({}, ...contributed),
		auth: owned.auth,
		logger: owned.logger,
		...(owned.wsUrl === undefined ? {} : { waWebSocketUrl: owned.wsUrl }),
		...caches,
	}
}
