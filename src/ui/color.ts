// Whether output may be coloured: NO_COLOR (https://no-color.org) set to anything but "" turns colour off.

export function colorWanted(env: NodeJS.ProcessEnv = process.env): boolean {
  return !env.NO_COLOR && env.TERM !== 'dumb';
}
