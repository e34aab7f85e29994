/** How a value reads in a log line or error message: strings as they are, errors as
 * `Name: message`, the rest as JSON where possible. */
export function describe(value) {
  if (typeof value === 'string') return value;
  if (value instanceof Error) return `${value.name}: ${value.message}`;
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}
