// What went wrong, from an application/problem+json answer or a failed connection, as shown to people.
import { texts } from '../texts';

export interface Shown {
  detail: string;
  fields: Record<string, string>;
}

interface ProblemBody {
  detail?: unknown;
  title?: unknown;
  errors?: { field?: unknown; message?: unknown }[];
}

/** The problem's detail, and its field errors keyed by field name ("venue.location" stays as sent). */
export function shown(problem: unknown): Shown {
  const body = (problem ?? {}) as ProblemBody;
  const fields: Record<string, string> = {};
  for (const error of Array.isArray(body.errors) ? body.errors : []) {
    if (typeof error.field === 'string' && typeof error.message === 'string') fields[error.field] = error.message;
  }
  const detail = typeof body.detail === 'string' ? body.detail : typeof body.title === 'string' ? body.title : texts.unknownError;
  return { detail, fields };
}

/** A thrown fetch (no connection) as something to show. */
export function offlineProblem(): Shown {
  return { detail: texts.offline, fields: {} };
}

/** Runs an API call; a network failure becomes an offline problem instead of an exception. */
export async function attempt<T>(
  call: () => Promise<{ data?: T; error?: unknown; response: Response }>,
): Promise<{ data?: T; problem?: Shown; status: number }> {
  try {
    const { data, error, response } = await call();
    if (error !== undefined || !response.ok) return { problem: shown(error), status: response.status };
    return { data, status: response.status };
  } catch {
    return { problem: offlineProblem(), status: 0 };
  }
}
