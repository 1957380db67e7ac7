// One error class for everything a simulated contact refuses, so the simulator
// can map failures to a control-API answer (or a retry receipt) by `code`
// instead of matching libsignal's message strings.

export type ContactErrorCode =
	| 'bad_address' // a JID or Signal address we cannot name a session by
	| 'bad_bundle' // a prekey bundle with wrong key sizes or a bad signature
	| 'no_session' // encrypting without a session and without a bundle
	| 'bad_ciphertext' // libsignal could not decrypt (wrong session, tampered, replayed)
	| 'bad_plaintext' // decrypted bytes are not a padded proto.Message
	| 'bad_media' // media mac or hash mismatch, or a truncated blob
	| 'bad_state' // a persisted contact that does not parse

export class ContactError extends Error {
	readonly code: ContactErrorCode
	/** Worth retrying unchanged? Never for crypto failures: the input itself is wrong. */
	readonly retryable = false

	constructor(code: ContactErrorCode, message: string, options?: { cause?: unknown }) {
		super(message, options)
		this.name = 'ContactError'
		this.code = code
	}
}
