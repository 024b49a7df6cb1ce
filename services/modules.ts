import { concertModule } from "./concert/index.js";
import type { ServiceModule } from "./platform/suite.js";
import { tokenModule } from "./token/index.js";

/** Every service of the suite that is implemented, in start order. */
export const modules: ServiceModule[] = [tokenModule, concertModule];
