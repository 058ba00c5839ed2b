// The lab's own logger, shared by its rooms. WEFT_LAB_LOG_LEVEL quiets it (the demo prints progress
// instead) without touching the agents'.
import { createLogger } from '../log.js';

export const log = createLogger('lab', { level: process.env.WEFT_LAB_LOG_LEVEL ?? process.env.WEFT_LOG_LEVEL ?? 'info' });
